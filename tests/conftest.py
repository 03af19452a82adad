import sys
from pathlib import Path

# `servers` (test-owned sshd, redis, S3) is a helper module beside the tests.
sys.path.insert(0, str(Path(__file__).parent))
