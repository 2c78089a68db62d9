"""Bytes in: what an image is, how it is made to fit, and how one is fetched from a URL.

Shared by the intake (sniff, probe, data URLs, URL syntax) and the prepare step (fetch,
validate, fit). Nothing here knows Redis, the job record or the HTTP server.
"""
