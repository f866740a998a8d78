"""What every front end and the replica agree on, with no transport in it.

- ``chat``: a validated request (``ChatRequest``), whichever API or batch line it came from;
- ``events``: the format of a request's Redis stream (``delta`` / ``done`` / ``error`` entries, finish
  reasons), written by the replica (``ossfleet.replica.generation``) and the queue scripts, folded by the readers;
- ``openai``: OpenAI's request schemas and response bodies (chat, completions), without FastAPI;
- ``responses``: OpenAI's Responses API: input items, output items, its stream events.

This package imports nothing of ossfleet's above ``errors``, ``harmony`` and ``structured``.
"""
