# The cloud cluster: AKS with network policies enforced (Calico; the manifests rely on them), a
# system pool and the fleet's pool, labelled and tainted as deploy/k8s/overlays/cloud expects
# (tradefleet.io/pool=core, tradefleet.io/dedicated=core:NoSchedule), in its own network with a
# subnet for private endpoints (the database's), and a registry the nodes pull from.
resource "azurerm_virtual_network" "this" {
  name                = "${var.name}-vnet"
  resource_group_name = var.resource_group_name
  location            = var.location
  address_space       = [var.address_space]
  tags                = var.tags
}

resource "azurerm_subnet" "nodes" {
  name                 = "nodes"
  resource_group_name  = var.resource_group_name
  virtual_network_name = azurerm_virtual_network.this.name
  address_prefixes     = [cidrsubnet(var.address_space, 4, 0)]
}

resource "azurerm_subnet" "endpoints" {
  name                              = "private-endpoints"
  resource_group_name               = var.resource_group_name
  virtual_network_name              = azurerm_virtual_network.this.name
  address_prefixes                  = [cidrsubnet(var.address_space, 8, 255)]
  private_endpoint_network_policies = "Disabled"
}

resource "azurerm_kubernetes_cluster" "this" {
  name                      = "${var.name}-aks"
  resource_group_name       = var.resource_group_name
  location                  = var.location
  dns_prefix                = var.name
  kubernetes_version        = var.kubernetes_version
  sku_tier                  = "Standard"
  oidc_issuer_enabled       = true
  workload_identity_enabled = true
  tags                      = var.tags

  default_node_pool {
    name                         = "system"
    vm_size                      = var.system_vm_size
    node_count                   = 2
    zones                        = var.zones
    vnet_subnet_id               = azurerm_subnet.nodes.id
    only_critical_addons_enabled = true
    temporary_name_for_rotation  = "systemtmp"
  }

  identity {
    type = "SystemAssigned"
  }

  network_profile {
    network_plugin    = "azure"
    network_policy    = "calico"
    load_balancer_sku = "standard"
  }
}

resource "azurerm_kubernetes_cluster_node_pool" "fleet" {
  name                        = "fleet"
  kubernetes_cluster_id       = azurerm_kubernetes_cluster.this.id
  vm_size                     = var.fleet_vm_size
  mode                        = "User"
  auto_scaling_enabled        = true
  min_count                   = var.fleet_min_count
  max_count                   = var.fleet_max_count
  zones                       = var.zones
  vnet_subnet_id              = azurerm_subnet.nodes.id
  temporary_name_for_rotation = "fleettmp"
  node_labels = {
    "tradefleet.io/pool" = "core"
  }
  node_taints = ["tradefleet.io/dedicated=core:NoSchedule"]
  tags        = var.tags
}

resource "azurerm_container_registry" "this" {
  name                = replace("${var.name}registry", "-", "")
  resource_group_name = var.resource_group_name
  location            = var.location
  sku                 = "Standard"
  admin_enabled       = false
  tags                = var.tags
}

# The nodes pull the fleet's images with the cluster's kubelet identity: no pull secret.
resource "azurerm_role_assignment" "pull" {
  scope                            = azurerm_container_registry.this.id
  role_definition_name             = "AcrPull"
  principal_id                     = azurerm_kubernetes_cluster.this.kubelet_identity[0].object_id
  skip_service_principal_aad_check = true
}
