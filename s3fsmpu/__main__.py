from s3fsmpu.cli import entry

entry()
