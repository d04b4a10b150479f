"""The engines that run a plan's segments: ``local`` (a process pool) and ``aws`` (Step Functions).

Both run the same worker with the same cursor loop and leave the same
ResultWriter files (``resultwriter``) in the run folder.
"""
