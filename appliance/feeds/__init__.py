"""Market-data sources as pure logic (synthetic walk, replay) and the on-disk tick file.

The feed worker owns the ring and the pacing; these classes only produce ticks into the
arrays it hands them.
"""
