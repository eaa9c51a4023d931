# Shared by every tm/cowstack/<action> script (sourced, not executed).
# OpenNebula runs the action scripts on the front-end with the arguments shell-escaped; all
# logic lives in `cowstack tm` (src/tm). Here: serialize per datastore with a front-end
# flock, as OpenNebula's own drivers do, then hand the arguments over untouched. The `--`
# ends option parsing before the action and oned's arguments: they come from VM templates,
# and one shaped like an option (--config=..., --dry-run, --help) must arrive as data.
#
# Environment (optional):
#   COWSTACK_BIN               the cowstack program (default: `cowstack` on PATH)
#   COWSTACK_TM_LOCK_DIR       where the per-datastore lock files live (default /var/lock/one)
#   COWSTACK_TM_LOCK_TIMEOUT   seconds to wait for the datastore lock (default 900)

cowstack_tm() {
    _action=$1
    _ds=$2
    shift 2
    # The datastore id names the lock file: digits only, never evaluated.
    case $_ds in
        '' | *[!0-9]*)
            echo "ERROR: $_action: datastore id \"$_ds\" is not a number" >&2
            echo "cowstack tm $_action: datastore id \"$_ds\" is not a number" >&2
            exit 2
            ;;
    esac
    _dir=${COWSTACK_TM_LOCK_DIR:-/var/lock/one}
    mkdir -p -- "$_dir" || exit 1
    # -o: the lock fd is not inherited by cowstack, so the ssh control masters it leaves
    # running (ControlPersist) do not keep the datastore locked after it exits.
    exec flock -o -w "${COWSTACK_TM_LOCK_TIMEOUT:-900}" -- "$_dir/cowstack-ds-$_ds.lock" \
        "${COWSTACK_BIN:-cowstack}" tm -- "$_action" "$@"
}
