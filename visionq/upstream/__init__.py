"""Bytes out: the call to MiMo, in whichever of its APIs a job speaks.

`dialects` knows each API (endpoint, headers, body, answer), `body` writes a job's request
body with its images streamed in, and `client` makes the call and maps its failures.
"""
