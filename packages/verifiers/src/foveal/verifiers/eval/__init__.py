"""`foveal eval`: run an environment against a server, write results JSONL, a summary and an HTML report."""
