"""miner: mine least-privilege IAM policies from AWS CloudTrail logs."""

__version__ = "0.1.0"
