"""Experiment families, looked up by ``config.task``."""

from jaxvision.tasks import classify_localize
from jaxvision.tasks import detection
from jaxvision.tasks import segmentation
from jaxvision.tasks.base import Evaluator, SupervisedTask, Task, get_task, register
