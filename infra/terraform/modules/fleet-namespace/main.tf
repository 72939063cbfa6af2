# A site's namespace (restricted Pod Security, as deploy/k8s/base/namespace.yaml) and its NATS
# users: the generated server config (users and permissions, Secret tradefleet-nats-config) and
# one nkey seed per user (Secret tradefleet-nats-USER, key seed), read from the
# generator's output directory. The seeds end up in the Terraform state: keep it encrypted.
resource "kubernetes_namespace_v1" "this" {
  metadata {
    name = var.namespace
    labels = {
      "pod-security.kubernetes.io/enforce"         = "restricted"
      "pod-security.kubernetes.io/enforce-version" = "v1.30"
      "pod-security.kubernetes.io/warn"            = "restricted"
      "pod-security.kubernetes.io/audit"           = "restricted"
    }
  }
}

resource "kubernetes_secret_v1" "nats_config" {
  metadata {
    name      = "tradefleet-nats-config"
    namespace = kubernetes_namespace_v1.this.metadata[0].name
  }
  data = {
    "nats-server.conf" = file("${var.nats_config_dir}/nats-server.conf")
  }
}

resource "kubernetes_secret_v1" "nats_seed" {
  for_each = toset(var.users)
  metadata {
    name      = "tradefleet-nats-${each.key}"
    namespace = kubernetes_namespace_v1.this.metadata[0].name
  }
  data = {
    seed = file("${var.nats_config_dir}/${each.key}.nk")
  }
}
