# Shared by every datastore/cowstack/<action> script (sourced, not executed).
# oned's one_datastore driver runs `<action> ID` on the front-end with the driver action
# (base64 DS_DRIVER_ACTION_DATA XML) on stdin; OpenNebula before 6.8 passed it as the first
# argument instead (`<action> DRV_ACTION ID`). All logic lives in `cowstack ds` (src/ds): the
# arguments and stdin are handed over untouched. The `--` ends option parsing before the action:
# nothing oned passes is ever read as an option of cowstack. Node locks are taken by cowstack
# itself on the node it works through.
#
# Environment (optional):
#   COWSTACK_BIN   the cowstack program (default: `cowstack` on PATH)

cowstack_ds() {
    exec "${COWSTACK_BIN:-cowstack}" ds -- "$@"
}
