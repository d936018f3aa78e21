"""The device side of edgekit: reaching a device and working on it.

- transport: run/put/get on a machine (local, SSH, a recording), with its capabilities
- recording: the layout `probe --record` writes and RecordedTransport replays
- probe: facts (command + pure parser) and the detected target
- facts: what deploy reads off a device (one command, one pure parser)
- preflight: disk, RAM (plan's fit rule) and build tools, before anything is written
- wheels: the local caches of edgekit's own wheel, device-built runtime wheels, file hashes
- manifest: deploy.json, the record a deploy leaves on the device
- artifact: an artifact's files, hashes and key as deploy sends them
- checks: what the device's own doctor says of a runtime there
- untrusted: what a device says, checked before it touches this machine
- deploy: the deploy steps, each with a typed outcome
- job: the typed job.json both ends share
- runs: the workstation side of a bench or eval run on a device
- agent: the device side (`python -m edgekit.device.agent VERB RUNDIR`)
- tensorrt_build: a TensorRT engine built on the device with its trtexec, cached there by what it depends on
- tensorrt_remote: `export tensorrt --on DEST`, the workstation side of that build
- fleet: one artifact on many hosts
- inventory: Ansible inventories, read by ansible-core itself

This package never imports edgekit.cli.
"""
