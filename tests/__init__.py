"""The harness's tests, one folder per package they test."""
