/* The staff screen's script (edge/screens/templates/staff/base.html inlines it; its CSP hash is computed from
   this file). After a tap the buttons are disabled (one post per tap). A card that needs the staff member's
   PIN again has its own field (input.need), never filled in by the page; the reload waits while someone types
   in it, and a PIN typed there and left alone is cleared by the next reload (30 s after the last keystroke or
   focus). The login page does not reload itself (data-refresh 0). */
(function(){
var sent=false;
document.querySelectorAll('form.decide').forEach(function(f){f.addEventListener('submit',function(e){
if(sent){e.preventDefault();return;}sent=true;
setTimeout(function(){document.querySelectorAll('button').forEach(function(b){b.disabled=true;});},0);});});
var busy=0,HOLD=30000;
document.querySelectorAll('input.need').forEach(function(i){['focus','input'].forEach(function(t){
i.addEventListener(t,function(){busy=Date.now();});});});
var wait=parseInt(document.body.getAttribute('data-refresh'),10)*1000;
function tick(){if(sent||Date.now()-busy<HOLD){setTimeout(tick,wait);return;}
location.replace('/');}
if(wait>0){setTimeout(tick,wait);}
})();
