"""A Tinker-compatible training service: the tinker SDK's HTTP API over Foveal's trainer, renderer and engine."""

from foveal.trainer.tinker_service.app import create_app
from foveal.trainer.tinker_service.service import TinkerService

__all__ = ["TinkerService", "create_app"]
