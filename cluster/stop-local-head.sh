#!/usr/bin/env bash
# Stop the head started by start-local-head.sh (same --temp-dir; default /tmp/rlcustom-ray).
# Ends only that head's processes, by pid; never `ray stop` (which stops every Ray here).
exec "$(dirname "${BASH_SOURCE[0]}")/start-local-head.sh" --stop "$@"
