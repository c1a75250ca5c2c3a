#!/bin/sh
# journalctl double: `journalctl -u UNIT [-n N]` prints the tail of the unit's log kept by
# the systemctl double.
unit=; n=10
while [ $# -gt 0 ]; do
  case $1 in
    -u) unit=$2; shift 2 ;;
    -n) n=$2; shift 2 ;;
    -o) shift 2 ;;
    *) shift ;;
  esac
done
case $unit in *.*) ;; *) unit=$unit.service ;; esac
f=/var/log/systemd-double/$unit.log
[ -f "$f" ] && tail -n "$n" "$f"
exit 0
