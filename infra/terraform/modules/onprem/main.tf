# The on-prem site: its namespace and NATS users (fleet-namespace), the leaf node's credentials
# (Secret tradefleet-nats-leaf: the hub's URL, the leaf user's nkey seed, the hub's CA), and the
# nodes beside the broker marked for the fleet (deploy/k8s/overlays/onprem's placement).
module "namespace" {
  source          = "../fleet-namespace"
  namespace       = var.namespace
  users           = var.services
  nats_config_dir = var.nats_config_dir
}

resource "kubernetes_secret_v1" "leaf" {
  metadata {
    name      = "tradefleet-nats-leaf"
    namespace = module.namespace.namespace
  }
  data = {
    url      = var.hub_url
    seed     = trimspace(file("${var.nats_config_dir}/leaf.nk"))
    "ca.crt" = file(var.hub_ca_file)
  }
}

# The risk gate's approval signing key (risk signs, execution checks: libs/common/signing.py),
# from the same folder as the seeds (`tradefleet nats config` writes approval.key).
resource "kubernetes_secret_v1" "approval_key" {
  metadata {
    name      = "tradefleet-approval-key"
    namespace = module.namespace.namespace
  }
  data = {
    key = trimspace(file("${var.nats_config_dir}/approval.key"))
  }
}

resource "kubernetes_labels" "edge" {
  for_each    = toset(var.edge_nodes)
  api_version = "v1"
  kind        = "Node"
  metadata {
    name = each.key
  }
  labels = {
    "tradefleet.io/pool" = "edge"
  }
}

resource "kubernetes_node_taint" "edge" {
  for_each = toset(var.edge_nodes)
  metadata {
    name = each.key
  }
  taint {
    key    = "tradefleet.io/dedicated"
    value  = "edge"
    effect = "NoSchedule"
  }
}
