"""The randomized fault soak (`python -m benchmarks.soak`): a seeded fault schedule
(schedule.py), the processes it hits (fleet.py), the nemesis that injects it
(nemesis.py), the workload pieces, one per feature (pieces.py), and the run that ties
them together and hands the evidence to the checkers (run.py)."""
