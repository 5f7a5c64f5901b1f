#!/usr/bin/env bash
# Writes the kubeconfig the internal controller uses to reach this remote
# cluster, signed in as the ServiceAccount from this directory.
#
#   deploy/remote/make-kubeconfig.sh SERVER CA_FILE [DURATION] > remote.kubeconfig
#
# SERVER is the remote API server's URL as the internal cluster reaches it,
# CA_FILE its CA certificate. The token is a bound token from the TokenRequest
# API, valid for DURATION (default 8760h); rotate it by running this again
# and updating the Secret: the controller reconnects without a restart.
# Run it with kubectl pointed at the remote cluster.
set -euo pipefail
server=${1:?usage: make-kubeconfig.sh SERVER CA_FILE [DURATION]}
ca_file=${2:?usage: make-kubeconfig.sh SERVER CA_FILE [DURATION]}
duration=${3:-8760h}

[ -r "$ca_file" ] || { echo "make-kubeconfig.sh: cannot read CA file $ca_file" >&2; exit 1; }
ca=$(base64 <"$ca_file" | tr -d '\n')
token=$(kubectl -n internal-services-remote create token internal-services --duration="$duration")
cat <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
  - name: remote
    cluster:
      server: $server
      certificate-authority-data: $ca
users:
  - name: internal-services
    user:
      token: $token
contexts:
  - name: remote
    context:
      cluster: remote
      user: internal-services
current-context: remote
KUBECONFIG
