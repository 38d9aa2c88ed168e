"""The preemption watch on its own: a signal asks for a stop at the step boundary, a second one
acts at once, and the previous handlers come back."""

import signal

import pytest

from imro_jax.train import preemption


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_is_recorded_and_a_second_one_acts_at_once(signum):
    before = signal.getsignal(signum)
    with preemption.Watch() as watch:
        assert not watch.reached(1)
        # raise_signal, not os.kill: the kernel may hand a process-directed signal to another thread
        # (XLA's), and then Python runs the handler a little later, possibly outside the block below
        signal.raise_signal(signum)
        assert watch.reached(2) and watch.signum == signum
        stop = preemption.Preempted(2, watch.signum)
        assert stop.exit_status == 128 + signum
        if signum == signal.SIGINT:  # the second Ctrl-C interrupts, as without the watch
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signum)
    assert signal.getsignal(signum) == before
