"""The command-line entry points split a CPU-only host into one device per core."""

import os
import subprocess
import sys

import pytest

from jaxvision import cpu_devices

PROBE = ("from jaxvision import cpu_devices; cpu_devices.configure(); import jax; "
         "print(jax.device_count())")


def _device_count(**env):
  base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", cpu_devices.ENV)}
  result = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env},
                          capture_output=True, text=True, timeout=120)
  if result.returncode:
    return result.stderr
  return int(result.stdout.split()[-1])


def test_default_count_is_a_power_of_two_within_the_cores():
  count = cpu_devices.default_count()
  assert 1 <= count <= min(os.cpu_count(), cpu_devices.MAX_DEFAULT_DEVICES)
  assert count & (count - 1) == 0


@pytest.mark.slow
def test_environment_chooses_the_count_and_explicit_xla_flags_win():
  assert _device_count() == cpu_devices.default_count()
  assert _device_count(JAXVISION_CPU_DEVICES="3") == 3
  explicit = "--xla_force_host_platform_device_count=5"
  assert _device_count(JAXVISION_CPU_DEVICES="3", XLA_FLAGS=explicit) == 5
  assert "JAXVISION_CPU_DEVICES='zero' must be a positive integer" in _device_count(
      JAXVISION_CPU_DEVICES="zero")


def test_does_nothing_once_jax_is_imported(monkeypatch):
  import jax  # noqa: F401  (already imported by the test session)
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  assert cpu_devices.configure() is None
  assert "XLA_FLAGS" not in os.environ


def test_collective_timeouts_are_raised_unless_xla_flags_set_them(monkeypatch):
  """A device that reaches a collective late (busy cores) must not abort the process."""
  monkeypatch.delitem(sys.modules, "jax")  # configure() acts only before jax is imported
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2 "
                                  "--xla_cpu_collective_timeout_seconds=7")
  assert cpu_devices.configure() is None  # the device count was already set
  flags = os.environ["XLA_FLAGS"].split()
  assert "--xla_cpu_collective_timeout_seconds=7" in flags  # the user's value wins
  assert "--xla_cpu_collective_call_terminate_timeout_seconds=1800" in flags
  assert len(flags) == 3
  # XLA accepts the flags (it aborts on unknown ones): a collective runs under them.
  probe = ("import jax, jax.numpy as jnp; print(jax.pmap(lambda x: jax.lax.psum(x, 'i'), "
           "axis_name='i')(jnp.ones(2))[0])")
  result = subprocess.run([sys.executable, "-c", probe], env=dict(os.environ),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert float(result.stdout.split()[-1]) == 2.0
