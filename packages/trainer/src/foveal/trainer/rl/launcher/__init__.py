"""`foveal rl`: one command that runs a whole RL job on one machine as separate processes.

Public API:
    foveal.trainer.rl.launcher.command.run_rl(config: RLConfig, *, connect: bool) -> LaunchResult
    `foveal rl --config run.toml [--connect]`                     (foveal.trainer.rl.launcher.command)
"""
