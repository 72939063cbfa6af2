# The database: a managed PostgreSQL with TimescaleDB (Timescale Cloud on Azure, the full
# TimescaleDB: hypertables, compression and retention policies, which `tradefleet db migrate`
# sets up; backups and point-in-time recovery are the service's). The fleet reaches it over
# Azure Private Link only: a private endpoint in the cluster's network.
resource "timescale_privatelink_authorization" "this" {
  subscription_id = var.subscription_id
  name            = "${var.name} (terraform)"
}

data "timescale_privatelink_available_regions" "all" {}

resource "azurerm_private_endpoint" "db" {
  name                = "${var.name}-db"
  resource_group_name = var.resource_group_name
  location            = var.location
  subnet_id           = var.endpoints_subnet_id

  private_service_connection {
    name                              = "${var.name}-db"
    private_connection_resource_alias = data.timescale_privatelink_available_regions.all.regions[var.timescale_region].private_link_service_alias
    is_manual_connection              = true
    request_message                   = "tradefleet"
  }

  depends_on = [timescale_privatelink_authorization.this]
}

resource "timescale_privatelink_connection" "db" {
  azure_connection_name = azurerm_private_endpoint.db.name
  region                = var.timescale_region
  ip_address            = azurerm_private_endpoint.db.private_service_connection[0].private_ip_address
  name                  = var.name
}

resource "timescale_service" "db" {
  name                           = var.name
  region_code                    = var.timescale_region
  milli_cpu                      = var.milli_cpu
  memory_gb                      = var.memory_gb
  enable_ha_replica              = var.enable_ha_replica
  environment_tag                = "PROD"
  private_endpoint_connection_id = timescale_privatelink_connection.db.connection_id
}
