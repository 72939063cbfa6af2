# The fleet's secrets in the cloud cluster: the namespace, the NATS users (the services', admin's
# for the job that makes the streams, trainer's for the scheduled retrains' alerts), the database
# URL and the certificate the on-prem leaf nodes connect to. Everything here ends up in the Terraform state: keep it encrypted.
provider "kubernetes" {
  config_path    = var.kubeconfig_path
  config_context = var.kube_context
}

module "namespace" {
  source          = "../modules/fleet-namespace"
  namespace       = var.namespace
  users           = concat(var.services, ["admin", "trainer"])
  nats_config_dir = var.nats_config_dir
}

resource "kubernetes_secret_v1" "db" {
  metadata {
    name      = "tradefleet-db"
    namespace = module.namespace.namespace
  }
  data = {
    TRADEFLEET_DB_URL = var.db_url
  }
}

resource "kubernetes_secret_v1" "leaf_tls" {
  metadata {
    name      = "tradefleet-nats-leaf-tls"
    namespace = module.namespace.namespace
  }
  type = "kubernetes.io/tls"
  data = {
    "tls.crt" = file(var.leaf_tls_cert_file)
    "tls.key" = file(var.leaf_tls_key_file)
  }
}
