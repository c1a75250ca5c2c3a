# A plain tool double (runc, crictl, CNI plugins): answers --version.
ME=$(basename "$0")
case ${1:-} in
  --version|-v|version) echo "$ME $DOUBLE_VERSION (test double, $DOUBLE_ARCH)" ;;
  *) die "this double only answers --version" ;;
esac
