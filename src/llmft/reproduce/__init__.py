"""`llmft reproduce PAPER`: a paper's miniature as one command that writes a report beside the paper's table.

What was chosen, and why:
- A paper's plan lives in its recipe package (`llmft.recipes.<name>.reproduce.plan`): the stages (each one
  `llmft make-data/train/eval/estimate` command line, as a user would type it), the tables read back from the
  runs' metrics files, the paper's own figures and the claims. `papers.py` only names where each plan lives.
- Stages run as subprocesses (`python -m llmft ...`), so the commands the report lists are the ones that ran.
- Resume: a finished stage leaves `DIR/stages/<stage>.json` (written atomically after the command exits 0);
  a rerun skips every stage with a marker and redoes only the unfinished one (its command starts it afresh).
- Claims are pure functions of the tables (`claims.py`): the report's "shown / not shown" lines are computed,
  never written by hand, and a test checks the wording against a table.
"""
