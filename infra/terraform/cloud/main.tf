# The cloud side: the cluster, the database and the object storage. Then `cloud-fleet` puts the
# fleet's secrets into the cluster and deploy/k8s/overlays/cloud runs the fleet on it.
provider "azurerm" {
  features {}
  subscription_id     = var.subscription_id
  storage_use_azuread = true
}

provider "timescale" {
  project_id = var.timescale_project_id
  access_key = var.timescale_access_key
  secret_key = var.timescale_secret_key
}

locals {
  tags = {
    app = "tradefleet"
  }
}

resource "azurerm_resource_group" "this" {
  name     = "${var.name}-rg"
  location = var.location
  tags     = local.tags
}

module "cluster" {
  source              = "../modules/cloud-cluster"
  name                = var.name
  resource_group_name = azurerm_resource_group.this.name
  location            = var.location
  tags                = local.tags
}

module "database" {
  source              = "../modules/cloud-database"
  name                = var.name
  resource_group_name = azurerm_resource_group.this.name
  location            = var.location
  subscription_id     = var.subscription_id
  timescale_region    = var.timescale_region
  endpoints_subnet_id = module.cluster.endpoints_subnet_id
}

module "storage" {
  source              = "../modules/cloud-storage"
  name                = var.name
  resource_group_name = azurerm_resource_group.this.name
  location            = var.location
  tags                = local.tags
}
