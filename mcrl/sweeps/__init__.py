"""Many runs at once: a sweep file's trials (seeds, variants, searches) on Ray Tune."""
