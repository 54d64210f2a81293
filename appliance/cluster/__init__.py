"""Beyond one host: NATS JetStream subjects, codecs, identities and server processes.

Plain logic like feeds and venues: no Config, no shared memory. The workers that move
ring records and queue records over NATS compose these from the config.
"""
