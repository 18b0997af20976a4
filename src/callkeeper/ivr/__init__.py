"""IVR: the script model (`script`), its checkpointed sans-IO interpreter (`interpreter`), and
the session record that moves between IVR nodes when one dies (`session`).

Pure like the rest of the core: the interpreter takes `now` and the caller's digits as inputs and
leaves PlayPrompt / Transfer / Checkpoint ... commands in a queue for the IVR node process.
"""
