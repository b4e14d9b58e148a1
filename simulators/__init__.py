"""Local simulators of Telegram's Bot API and of Coze, for tests, the demo and the benchmark.

Production code never imports this package.
"""
