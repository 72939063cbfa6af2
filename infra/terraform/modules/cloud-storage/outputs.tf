output "account_name" {
  value = azurerm_storage_account.this.name
}

output "blob_endpoint" {
  value = azurerm_storage_account.this.primary_blob_endpoint
}

output "model_registry_container" {
  value = azurerm_storage_container.models.name
}

output "backups_container" {
  value = azurerm_storage_container.backups.name
}
