"""Development tooling: `visionq dev` (the whole stack on one machine), the Redis server it
and the tests start, and loopback helpers. Nothing in the server imports it except the
composition root (`visionq.cli`, for `visionq dev`); an import-linter contract holds that.
"""
