//! placeholder
use super::{Edge, EdgeSink, Error, Hardware, Pin};
use site_plugin_api::{Bias, Level, PwmSpec};
pub struct CdevBackend;
impl CdevBackend {
    pub fn open(_chip: Option<&str>) -> Result<Self, Error> {
        Err(Error::NotAPi {
            detail: "todo".into(),
        })
    }
}
impl Hardware for CdevBackend {
    fn name(&self) -> &'static str {
        "cdev"
    }
    fn attach(&mut self, _s: EdgeSink) -> Result<(), Error> {
        Ok(())
    }
    fn claim_input(&mut self, _p: Pin, _b: Bias) -> Result<(), Error> {
        Ok(())
    }
    fn claim_output(&mut self, _p: Pin, _l: Level) -> Result<(), Error> {
        Ok(())
    }
    fn claim_pwm(&mut self, _p: Pin, _s: PwmSpec) -> Result<(), Error> {
        Ok(())
    }
    fn release(&mut self, _p: Pin) {}
    fn read(&mut self, _p: Pin) -> Result<Level, Error> {
        Ok(Level::Low)
    }
    fn write(&mut self, _p: Pin, _l: Level) -> Result<(), Error> {
        Ok(())
    }
    fn set_pwm(&mut self, _p: Pin, _n: u64) -> Result<(), Error> {
        Ok(())
    }
    fn take_edges(&mut self, _o: &mut Vec<Edge>) -> Result<(), Error> {
        Ok(())
    }
}
