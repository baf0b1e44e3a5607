"""`python -m mss_jobs` is the `mss-jobs` command."""

from mss_jobs.cli import main

if __name__ == "__main__":
    main()
