"""exclusion=auto: the nodes to keep in fp32, fastest or fewest, within an F1 budget.

The search never sees the evaluation split: it judges every candidate set by F1 on
held-out rows (of the calibration split, disjoint from the rows that calibrate, or of
``holdout_split``), so the eval metrics a job reports stay an honest test of the set it
chose. A set meets the budget when its F1 drop holds at ``confidence`` in a paired
bootstrap over those rows.

1. Rank: quantize every candidate node (static QDQ, the job's calibrated ranges) and
   measure each node's SQNR on held-out rows (:mod:`quantsweep.exclusion_search.sensitivity`).
2. Speed (``objective=speed``): time node groups (op types, name patterns across
   layers) kept in fp32 against the model without them (:mod:`quantsweep.exclusion_search.speed`);
   groups that are slower quantized start kept and are never given back.
3. Start: evaluate the starting set (``start_from`` patterns and names, and the slow groups).
4. Grow, if the start misses the budget: keep more of the ranked nodes, worst SQNR
   first, until it is met: ``bisect`` halves the ranked prefix (about log2 N steps, and
   assumes F1 rises with the prefix), ``greedy`` adds one node per step.
5. Prune: give kept nodes back to quantization, least sensitive first, in chunks that
   halve down to single nodes, whenever the set without them still meets the budget.
6. Choose and confirm: the sets that met the budget, fastest (every step is timed
   against fp32) or fewest first, are scored on held-out rows the search never scored
   on, at a confidence corrected for the number confirmed; the first that holds is chosen.

A search takes dozens of accept-or-reject decisions on the same rows and keeps the best
set that passed, so that set passed partly by luck; the bootstrap bound of each step
does not count that selection, the confirmation on fresh rows does.

Every step quantizes the model and scores it; ``max_evaluations`` and ``max_minutes``
bound the steps. When they run out the search ends with the sets evaluated so far.

The package is a folder so that each part can be read, tested and imported alone:

- ``statistics``: the bootstrap bound, the budget test and the rows' resolution, pure
  functions of numbers (the evaluation stage bounds its own drop with them);
- ``search``: steps 3 to 6 on any scoring function, knowing nothing of models;
- ``sensitivity`` and ``speed``: steps 1 and 2, read off ONNX models and timings;
- ``candidates``: the held-out rows and the candidate models, quantized, scored, timed;
- ``find``: one job's search from start to record (:func:`~quantsweep.exclusion_search.find.find_exclusions`).

This file imports none of them, so that importing one module loads no other.
"""

# bump when the ranking or the search changes what it chooses: cached searches stop matching
SEARCH_FORMAT = 2
