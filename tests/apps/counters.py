"""Per-process counters the test chat module updates and the test app reports."""

chat_starts = 0
chat_ends = 0
