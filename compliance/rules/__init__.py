"""The rules, one module each, run in the order of `PIPELINE` (compliance.pipeline).

A rule looks at a `FixFrame` (every fix of the batch, enriched) and the per-truck values
carried from the previous batch, and answers with boolean conditions per fix; the episode
detector (compliance.runs) turns those into violations with a start, an end, a worst value
and the fixes that prove them. Rules hold no state of their own: everything that must
survive a batch lives in the carry (a rule names its own columns in `Rule.keeps`), which the
engine checkpoints in `truck_state`. Each rule also declares what the rest of the product
needs to know about it (kind, labels, settings section, legal-basis key): compliance.rules.base.
"""
