output "cluster_name" {
  value = azurerm_kubernetes_cluster.this.name
}

output "cluster_id" {
  value = azurerm_kubernetes_cluster.this.id
}

output "oidc_issuer_url" {
  description = "For workload identity (e.g. the model registry's storage, not wired here)"
  value       = azurerm_kubernetes_cluster.this.oidc_issuer_url
}

output "registry" {
  description = "Where the fleet's images go: REGISTRY/tradefleet:VERSION (deploy/k8s/components/release)"
  value       = azurerm_container_registry.this.login_server
}

output "virtual_network_id" {
  value = azurerm_virtual_network.this.id
}

output "endpoints_subnet_id" {
  value = azurerm_subnet.endpoints.id
}
