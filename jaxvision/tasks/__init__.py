"""Experiment families, looked up by ``config.task``."""

from jaxvision.tasks import autoencoder
from jaxvision.tasks import classify_localize
from jaxvision.tasks import context_prediction
from jaxvision.tasks import dcgan
from jaxvision.tasks import detection
from jaxvision.tasks import pixelcnn
from jaxvision.tasks import rcnn
from jaxvision.tasks import retinanet
from jaxvision.tasks import segmentation
from jaxvision.tasks import simclr
from jaxvision.tasks import vae
from jaxvision.tasks.base import (Evaluator, MultiNetworkTask, SupervisedTask, Task, get_task,
                                  register)
