output "cluster_name" {
  description = "az aks get-credentials --resource-group RG --name CLUSTER"
  value       = module.cluster.cluster_name
}

output "resource_group" {
  value = azurerm_resource_group.this.name
}

output "registry" {
  value = module.cluster.registry
}

output "db_url" {
  value     = module.database.db_url
  sensitive = true
}

output "storage_account" {
  value = module.storage.account_name
}
