#!/bin/sh
# systemctl double (tests/doubles/k8s/README.md): a tiny service manager for a test root.
# `start` reads the unit and its drop-ins (EnvironmentFile=, Environment=, ExecCondition=,
# ExecStartPre=, the last ExecStart=), runs it in the background in its own session with
# output to /var/log/systemd-double/UNIT.log, and for Type=notify waits for the service's
# READY (it touches $NOTIFY_SOCKET) or its death. Every start is appended to
# /var/log/systemd-double/starts, so tests can assert what was (re)started.
D=/run/systemd-double
LOG=/var/log/systemd-double
mkdir -p "$D" "$LOG"

norm() { case $1 in *.*) echo "$1" ;; *) echo "$1.service" ;; esac; }
unit_file() {
  for d in /etc/systemd/system /usr/local/lib/systemd/system /usr/lib/systemd/system /lib/systemd/system; do
    [ -f "$d/$1" ] && { echo "$d/$1"; return 0; }
  done
  return 1
}
unit_text() {
  f=$(unit_file "$1") || return 1
  cat "$f"
  for d in /usr/local/lib/systemd/system/$1.d /etc/systemd/system/$1.d; do
    for x in "$d"/*.conf; do [ -f "$x" ] && cat "$x"; done
  done
  return 0
}
pid_of() { cat "$D/$1.pid" 2>/dev/null; }
active() { p=$(pid_of "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

start() {
  u=$1
  active "$u" && return 0
  unit_file "$u" > /dev/null || { echo "Failed to start $u: Unit $u not found." >&2; return 5; }
  name=${u%.service}
  r="$D/$u.run"
  text=$(unit_text "$u" | sed -e ':a' -e '/\\$/{N;s/\\\n//;ba' -e '}' | sed "s/%N/$name/g; s/%n/$u/g")
  exec_line=$(printf '%s\n' "$text" | sed -n 's/^ExecStart=//p' | grep -v '^[[:space:]]*$' | tail -n 1)
  [ -n "$exec_line" ] || { echo "$u has no ExecStart=" >&2; return 1; }
  {
    echo "#!/bin/sh"
    printf '%s\n' "$text" | while IFS= read -r line; do
      case $line in
        EnvironmentFile=-*) p=${line#EnvironmentFile=-}; echo "if [ -f $p ]; then set -a; . $p; set +a; fi" ;;
        EnvironmentFile=*) p=${line#EnvironmentFile=}; echo "set -a; . $p || exit 1; set +a" ;;
        Environment=*) echo "export ${line#Environment=}" ;;
        ExecCondition=*) echo "${line#ExecCondition=} || exit 0" ;;
        ExecStartPre=-*) echo "${line#ExecStartPre=-} || true" ;;
        ExecStartPre=*) echo "${line#ExecStartPre=} || exit 1" ;;
      esac
    done
    echo "exec $exec_line"
  } > "$r"
  notify=
  printf '%s\n' "$text" | grep -q '^Type=notify' && notify="$D/$u.notify"
  rm -f "$D/$u.notify"
  echo "start $u" >> "$LOG/starts"
  if [ -n "$notify" ]; then
    NOTIFY_SOCKET=$notify setsid sh "$r" >> "$LOG/$u.log" 2>&1 < /dev/null &
  else
    setsid sh "$r" >> "$LOG/$u.log" 2>&1 < /dev/null &
  fi
  echo $! > "$D/$u.pid"
  i=0
  while :; do
    if ! kill -0 "$(pid_of "$u")" 2>/dev/null; then
      rm -f "$D/$u.pid"
      echo "Job for $u failed because the control process exited with error code." >&2
      echo "See \"systemctl status $u\" and \"journalctl -xeu $u\" for details." >&2
      return 1
    fi
    [ -z "$notify" ] && [ $i -ge 2 ] && return 0
    [ -n "$notify" ] && [ -f "$notify" ] && return 0
    i=$((i + 1))
    [ $i -gt 600 ] && { echo "Job for $u timed out." >&2; return 1; }
    sleep 0.05
  done
}

stop() {
  u=$1; p=$(pid_of "$u")
  [ -n "$p" ] || return 0
  kill -TERM "-$p" 2>/dev/null
  i=0
  while kill -0 "$p" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
  kill -KILL "-$p" 2>/dev/null
  rm -f "$D/$u.pid"
  echo "stop $u" >> "$LOG/starts"
  return 0
}

quiet=
verb=
units=
for a in "$@"; do
  case $a in
    --quiet|-q) quiet=1 ;;
    --no-block|--now|--no-pager) ;;
    -*) echo "systemctl double: unknown option $a" >&2; exit 1 ;;
    *) if [ -z "$verb" ]; then verb=$a; else units="$units $(norm "$a")"; fi ;;
  esac
done
rc=0
case $verb in
  daemon-reload) echo "daemon-reload" >> "$LOG/starts" ;;
  start) for u in $units; do start "$u" || rc=$?; done ;;
  stop) for u in $units; do stop "$u"; done ;;
  restart) for u in $units; do stop "$u"; start "$u" || rc=$?; done ;;
  try-restart) for u in $units; do if active "$u"; then stop "$u"; start "$u" || rc=$?; fi; done ;;
  is-active)
    for u in $units; do
      if active "$u"; then [ -n "$quiet" ] || echo active; else [ -n "$quiet" ] || echo inactive; rc=3; fi
    done ;;
  is-enabled)
    for u in $units; do
      if ls /etc/systemd/system/*.wants/"$u" > /dev/null 2>&1; then echo enabled; else echo disabled; rc=1; fi
    done ;;
  enable|disable|mask|unmask) ;;
  *) echo "systemctl double: unsupported verb '$verb'" >&2; rc=1 ;;
esac
exit $rc
