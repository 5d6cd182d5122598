//! SKELETON — plugins helper implements.
use crate::params::Obj;
use crate::{AffinityPlugin, PluginContext};
pub fn factory(_o: &mut Obj<'_, '_>, _c: &PluginContext<'_>) -> Option<Box<dyn AffinityPlugin>> {
    None
}
