#!/usr/bin/env bash
# Reserves 2 MB hugepages and mounts hugetlbfs where the kernel allows it, and reports
# what it did. privlinkd falls back to --no-huge when none are available, so failing here
# is a warning, not an error.
#   scripts/hugepages.sh [PAGES]     (default 512 pages = 1 GiB)
set -u
pages=${1:-512}
sysfs=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages

if [ "$(id -u)" -ne 0 ]; then
  echo "hugepages: not root; leaving hugepages as they are"
  exit 0
fi
if [ ! -w "$sysfs" ]; then
  echo "hugepages: this kernel offers no 2 MB hugepages; privlinkd will run with --no-huge"
  exit 0
fi
have=$(cat "$sysfs")
if [ "$have" -lt "$pages" ]; then
  echo "$pages" > "$sysfs" 2>/dev/null || true
  have=$(cat "$sysfs")
fi
if ! grep -q ' /dev/hugepages hugetlbfs' /proc/mounts; then
  mkdir -p /dev/hugepages
  mount -t hugetlbfs nodev /dev/hugepages 2>/dev/null || true
fi
free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
if grep -q ' /dev/hugepages hugetlbfs' /proc/mounts && [ "$have" -gt 0 ]; then
  echo "hugepages: $have x 2 MB reserved ($free free), hugetlbfs on /dev/hugepages"
else
  echo "hugepages: could not reserve or mount hugepages (have $have); privlinkd will run with --no-huge"
fi
