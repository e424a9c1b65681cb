"""s3fsmpu: an S3 bucket as a directory, with files streamed as verified multipart uploads."""

__version__ = "0.1.0"
