# kubectl double (kubeadm's kubectl artifact).
kubectl_main "$@"
