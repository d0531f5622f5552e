"""Test-only harness: run normlab's command line and signal it at an exact point.

    python tests/killpoints.py WHEN SIGNAL -- compare --norms bn ...

WHEN is ``step:N``, after this process's N-th optimizer step (mid-epoch when N is not a
multiple of the steps per epoch), or ``replace:NAME:N``, at the N-th rename onto a file named
NAME: the temporary file is written and synced, the rename has not happened yet, which is the
window an atomic write exists for. SIGNAL is KILL or INT; the process sends it to itself, so
the point is exact rather than a race against a timer.

Nothing in normlab is changed: the hooks are PyTorch's global optimizer-step hook and a wrapper
around os.replace, installed here, and the rest is the real `normlab` entry point, with
sys.argv as `normlab ...` would have it (the resume command normlab prints is built from it).
"""

import os
import signal
import sys
import time


def fire(signum: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signum)
    # SIGKILL never returns; SIGINT raises KeyboardInterrupt inside this sleep, right here.
    time.sleep(60)
    raise AssertionError(f"signal {signum} was not delivered")


def install(when: str, signum: int) -> None:
    kind, _, spec = when.partition(":")
    count = 0
    if kind == "step":
        target = int(spec)
        from torch.optim.optimizer import register_optimizer_step_post_hook

        def after_step(optimizer, args, kwargs):
            nonlocal count
            count += 1
            if count == target:
                fire(signum)

        register_optimizer_step_post_hook(after_step)
    elif kind == "replace":
        name, target = spec.rsplit(":", 1)
        target = int(target)
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            nonlocal count
            if os.path.basename(os.fspath(dst)) == name:
                count += 1
                if count == target:
                    fire(signum)
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace
    else:
        raise SystemExit(f"killpoints: unknown point {when!r}")


def main() -> int:
    when, signal_name, separator, *args = sys.argv[1:]
    assert separator == "--", "usage: killpoints.py WHEN SIGNAL -- normlab-args..."
    install(when, getattr(signal, "SIG" + signal_name))
    sys.argv = ["normlab", *args]
    from normlab.cli import main as normlab_main
    return normlab_main(args)


if __name__ == "__main__":
    sys.exit(main())
