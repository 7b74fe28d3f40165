"""After the verdict: a run's saved candidates read back, served over HTTP and exported."""
