"""The workspace: the sandbox's files, the scratchpad and the chat history, as one unit.

`archive` saves and loads it as a zip; `transfer` moves single files in and out; `gate` keeps a
load from swapping the workspace under a running agent turn.
"""
