"""The orchestrator of an RL run: rollouts from the environments, advantages, and the trainer's batches.

Public API:
    foveal.trainer.rl.orchestrator.loop.run_orchestrator(config: RLConfig) -> OrchestratorResult
    `foveal rl-orchestrator --config run.toml`                      (foveal.trainer.rl.orchestrator.loop)
"""
