"""The experiment harness: train a model the plain way and the nzdist way, count wire and memory bytes, compare
the bits, report. ``nzdist train``, the ``nzdist bench`` targets that train, ``launch/train.py`` and the tests'
parity scripts are thin front ends over it. One concern per module (see README.md in this folder):

    config    ExperimentConfig (the one schema; presets; the DeepSpeed JSON mapped onto it)
    models    the byte-level GPT                               hf        the Hugging Face models
    weights   MiniLM's trained weights, located once           data      training text and per-step batches
    counters  wire and memory counters                         dist      process group, device, threads
    fsdp      the FSDP2 loop (plain vs nzdist.fsdp)            zero3     the DeepSpeed ZeRO-3 loop
    parity    bit-for-bit comparison of final parameters       report    the main job's report (JSON, PNG, text)

It sits on top of the integrations (codec <- fsdp, deepspeed, checkpoint <- experiments) and imports none of
launch, bench or cli.
"""
