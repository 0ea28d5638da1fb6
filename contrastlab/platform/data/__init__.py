"""Shards: schemas, writers, codecs, Ray Data readers and the bad-sample policy."""
