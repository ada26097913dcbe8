"""Continuous batching over llmft's own KV-cached decode loop: one worker thread owns the model, a prompt joins
the running batch at the next decode step (its prefill runs between two steps) and leaves the moment it ends.

`engine` schedules rows and runs the steps, `kv_cache` holds the batch's keys and values, `row_text` turns a
row's tokens into streamed text cut at stop strings, `generator` is the Generator protocol over an engine.
"""
