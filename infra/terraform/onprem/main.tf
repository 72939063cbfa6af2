# The on-prem site's namespace, NATS users and leaf credentials; then
# deploy/k8s/overlays/onprem runs md-gateway, risk, execution and the NATS leaf on it.
provider "kubernetes" {
  config_path    = var.kubeconfig_path
  config_context = var.kube_context
}

module "onprem" {
  source          = "../modules/onprem"
  nats_config_dir = var.nats_config_dir
  hub_url         = var.hub_url
  hub_ca_file     = var.hub_ca_file
  edge_nodes      = var.edge_nodes
}
