"""The fast tier stays fast: no test reaches the zoo, a vLLM server or the real LM without the `slow` mark."""

from .conftest import SLOW_FIXTURES


def test_every_test_using_the_zoo_or_a_server_is_marked_slow(request):
    # The session's items are the tests this run collected: with `-m "not slow"` this says that
    # none of them builds the zoo or starts a server; in a full run, that all of those are marked.
    unmarked = [item.nodeid for item in request.session.items
                if SLOW_FIXTURES & set(item.fixturenames) and item.get_closest_marker("slow") is None]
    assert unmarked == []
